"""lethe purger: erases a subject from MongoDB, S3 and Milvus per the data map."""
