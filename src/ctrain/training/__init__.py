"""Training: assemble the window, validate it, train candidates, evaluate the best on held-out rows."""
