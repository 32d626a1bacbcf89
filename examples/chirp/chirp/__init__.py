"""chirp: a small but real microblog, the workload Lifeboat moves around.

Users, posts, follows, a home timeline cached in Redis, media in an object store (a directory laid out as
Lifeboat's directory store, any S3 API, Azure Blob or Google Cloud Storage), a health endpoint and a seed
command.

Configuration comes from the environment Lifeboat gives every service: DATABASE_URL, REDIS_URL,
BUCKET_MEDIA_URL (file:///path, s3://bucket, az://container or gs://bucket, with the BUCKET_MEDIA_*
endpoint and credential variables of docs/app-contract.md), PORT for the web server.
"""
