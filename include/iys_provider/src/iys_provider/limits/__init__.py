"""İYS's limits: the learned request rate, the success ratio and the state workers share per client IP."""
