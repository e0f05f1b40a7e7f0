"""lethe intake: the public deletion API: accepts requests, keeps each request's status."""
