"""lethe's common package: event contracts, topic names, settings, logging, Kafka and HTTP plumbing."""
