"""İYS's change feed: the pull (a service) and where its movements are stored."""
