"""One module per algorithm family: its rule (the math) and its public optimizer."""
