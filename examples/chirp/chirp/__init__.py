"""chirp: a small but real microblog, the workload Lifeboat moves around.

Users, posts, follows, a home timeline cached in Redis, media in an object store (a directory laid out as
Lifeboat's directory store, or any S3 API), a health endpoint and a seed command.

Configuration comes from the environment Lifeboat gives every service: DATABASE_URL, REDIS_URL,
BUCKET_MEDIA_URL (file:///path or s3://bucket, with BUCKET_MEDIA_ENDPOINT for S3-compatible stores),
PORT for the web server.
"""
