"""Rolling a challenger out on live traffic: the split's one writer, the evidence, the control."""
