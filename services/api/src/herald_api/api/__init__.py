"""HTTP layer: routes, dependencies and error shapes."""
