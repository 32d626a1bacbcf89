"""The web app (WSGI: chirp.web:app)."""

import json
import uuid

from flask import Flask, Response, abort, jsonify, request
from markupsafe import escape

from . import db, storage, timeline

app = Flask("chirp")


def post_rows(where: str = "", params: tuple = (), limit: int = 50):
    rows = db.conn().execute(
        "SELECT p.id, u.handle, u.display_name, p.body, p.media_key, p.meta, p.created_at "
        "FROM posts p JOIN users u ON u.id = p.user_id " + where +
        " ORDER BY p.created_at DESC, p.id DESC LIMIT %s", (*params, limit)).fetchall()
    return [{"id": r[0], "handle": r[1], "display_name": r[2], "body": r[3], "media": r[4], "meta": r[5],
             "created_at": r[6].isoformat()} for r in rows]


@app.get("/healthz")
def health():
    checks = {}
    try:
        db.conn().execute("SELECT 1").fetchone()
        checks["database"] = "ok"
    except Exception as exc:  # report, do not crash
        checks["database"] = f"error: {type(exc).__name__}"
    client = timeline.redis()
    if client is not None:
        try:
            client.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return jsonify({"ok": ok, "checks": checks}), 200 if ok else 503


@app.get("/")
def home_page():
    posts = post_rows(limit=50)
    items = []
    for p in posts:
        media = f' <a href="/media/{escape(p["media"])}">[media]</a>' if p["media"] else ""
        items.append(f'<li><b>@{escape(p["handle"])}</b> {escape(p["body"])}{media}</li>')
    html = ("<!doctype html><meta charset=utf-8><title>chirp</title><h1>chirp</h1>"
            f"<p>{len(posts)} latest posts</p><ul>{''.join(items)}</ul>")
    return Response(html, mimetype="text/html")


@app.get("/api/posts")
def api_posts():
    limit = min(int(request.args.get("limit", 50)), 1000)
    return jsonify(post_rows(limit=limit))


@app.get("/api/stats")
def api_stats():
    c = db.conn()
    out = {}
    for table in ("users", "posts", "follows", "media"):
        out[table] = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
    return jsonify(out)


@app.post("/api/users")
def create_user():
    body = request.get_json(force=True)
    row = db.conn().execute(
        "INSERT INTO users (handle, display_name, bio, settings) VALUES (%s, %s, %s, %s) RETURNING id",
        (body["handle"], body.get("display_name", body["handle"]), body.get("bio", ""),
         json.dumps(body.get("settings", {})))).fetchone()
    return jsonify({"id": row[0]}), 201


def user_id(handle: str) -> int:
    row = db.conn().execute("SELECT id FROM users WHERE handle = %s", (handle,)).fetchone()
    if row is None:
        abort(404)
    return row[0]


@app.post("/api/follows")
def follow():
    body = request.get_json(force=True)
    follower, followee = user_id(body["follower"]), user_id(body["followee"])
    db.conn().execute("INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                      (follower, followee))
    client = timeline.redis()
    if client is not None:
        client.delete(timeline.key(follower) + ":built")
    return jsonify({"ok": True}), 201


@app.post("/api/posts")
def create_post():
    body = request.get_json(force=True)
    uid = user_id(body["handle"])
    row = db.conn().execute(
        "INSERT INTO posts (user_id, body, media_key, meta) VALUES (%s, %s, %s, %s) RETURNING id",
        (uid, body["body"], body.get("media"), json.dumps(body.get("meta", {})))).fetchone()
    timeline.enqueue_fanout(row[0])
    return jsonify({"id": row[0]}), 201


@app.get("/api/users/<handle>/home")
def home_timeline(handle):
    ids, cached = timeline.home(user_id(handle), int(request.args.get("limit", 50)))
    posts = post_rows("WHERE p.id = ANY(%s)", (ids,), limit=len(ids) or 1) if ids else []
    return jsonify({"cached": cached, "posts": posts})


@app.post("/api/media")
def upload_media():
    name = request.args.get("name") or "upload.bin"
    handle = request.args.get("handle")
    key = f"media/{uuid.uuid4().hex}/{name}"
    size, sha = storage.media().put(key, request.stream, request.content_type)
    uid = user_id(handle) if handle else None
    db.conn().execute("INSERT INTO media (key, size, sha256, content_type, uploaded_by) VALUES (%s, %s, %s, %s, %s)",
                      (key, size, sha, request.content_type or "application/octet-stream", uid))
    return jsonify({"key": key, "size": size, "sha256": sha}), 201


@app.get("/media/<path:key>")
def get_media(key):
    row = db.conn().execute("SELECT content_type FROM media WHERE key = %s", (key,)).fetchone()
    try:
        stream, size = storage.media().open(key)
    except (FileNotFoundError, OSError):
        abort(404)
    except Exception as exc:  # S3 NoSuchKey, Azure ResourceNotFoundError, GCS NotFound
        if any(word in type(exc).__name__ for word in ("NoSuchKey", "NotFound")) or "404" in str(exc):
            abort(404)
        raise

    def body():
        try:
            yield from iter(lambda: stream.read(1 << 16), b"")
        finally:
            stream.close()

    headers = {"Content-Length": str(size)}
    return Response(body(), mimetype=(row[0] if row else "application/octet-stream"), headers=headers)
