"""The notifier service's adapters: the only code of it that talks to Kafka, MongoDB, S3, SMTP or HTTP."""
