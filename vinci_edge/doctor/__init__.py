"""`vinci-edge doctor`: what this machine has for each backend, each checked against the CPU."""
