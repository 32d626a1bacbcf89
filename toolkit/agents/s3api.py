"""S3, the subset apps and tools use, in the media gateway (toolkit/agents/mediaserver.py): so an app on any
host says ``s3://`` with an endpoint (django-storages/boto3, Mastodon's S3 client, rclone) and its media are
the same files as everywhere else (toolkit/stores/layout.py: a key is a path). This text runs in the gateway
after objmeta's and layout's (standard library only); a request signed with AWS Signature Version 4 comes
here, one with the gateway's bearer token stays with the gateway's own protocol.

Path-style only (``http://<address>:<port>/<bucket>/<key>``), the buckets being the stack's. Supported:
ListBuckets, HeadBucket, GetBucketLocation, ListObjects (v1 and v2, prefix, delimiter, pages, url
encoding), GetObject (with a Range), HeadObject, PutObject, DeleteObject, DeleteObjects, and multipart
uploads (create, upload part, complete, abort, list parts). Every request is authenticated with the
stack's key pair (SigV4 in the Authorization header; the payload's SHA-256 is checked when it is signed,
Content-MD5 when it is given; aws-chunked bodies are decoded, their chunk signatures not checked). Not
supported (501 NotImplemented): ACLs, versioning, copies, tagging, presigned URLs, policies.
"""

import base64
import calendar
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import time
import uuid
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
S3_CHUNK = 1 << 20
SKEW = 15 * 60


class S3Error(Exception):
    def __init__(self, status, code, message):
        Exception.__init__(self, message)
        self.status, self.code, self.message = status, code, message


def s3_signed(handler):
    """Whether the request is one for the S3 API (signed with SigV4)."""
    return (handler.headers.get("Authorization") or "").startswith("AWS4-HMAC-SHA256 ")


def s3_serve(handler):
    try:
        S3Request(handler).serve()
    except S3Error as exc:
        handler.close_connection = True  # the body may be unread
        s3_xml(handler, exc.status, f"<Error><Code>{exc.code}</Code><Message>{escape(exc.message)}</Message><Resource>{escape(urlsplit(handler.path).path)}</Resource></Error>")


def s3_xml(handler, status, body, extra=None):
    data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode() if body else b""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (extra or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD" and data:
        handler.wfile.write(data)


def s3_time(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def http_time(seconds):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


class Limited:
    """At most ``left`` bytes of ``stream``."""

    def __init__(self, stream, left):
        self.stream, self.left = stream, left

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        data = self.stream.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        if not data:
            raise S3Error(400, "IncompleteBody", "the request body ended before its Content-Length")
        return data

    def readline(self):
        line = self.stream.readline(min(self.left, 65536))
        self.left -= len(line)
        return line


class Chunked:
    """A chunked body, decoded: HTTP/1.1's ``Transfer-Encoding: chunked`` and S3's aws-chunked share the
    framing (``<hex size>[;extension]\\r\\n<data>\\r\\n``..., a zero size, then trailers and an empty line);
    chunk signatures and trailers (a checksum the client computed) are read past: the SHA-256 is ours."""

    def __init__(self, stream, what):
        self.stream, self.what, self.left, self.done = stream, what, 0, False

    def read(self, n=-1):
        if self.done:
            return b""
        if self.left == 0:
            head = self.stream.readline()
            if not head:
                raise S3Error(400, "IncompleteBody", "the " + self.what + " body ended early")
            self.left = int(head.split(b";")[0].strip() or b"0", 16)
            if self.left == 0:
                while self.stream.readline() not in (b"\r\n", b"\n", b""):
                    pass
                self.done = True
                return b""
        data = self.stream.read(self.left if n < 0 else min(n, self.left))
        if not data:
            raise S3Error(400, "IncompleteBody", "the " + self.what + " body ended early")
        self.left -= len(data)
        if self.left == 0:
            self.stream.readline()
        return data

    def readline(self):
        out = b""
        while not out.endswith(b"\n"):
            ch = self.read(1)
            if not ch:
                break
            out += ch
        return out


def xml_values(body, tag):
    return [unescape_xml(v) for v in re.findall(r"<(?:\w+:)?" + tag + r">(.*?)</(?:\w+:)?" + tag + ">", body, re.S)]


def unescape_xml(text):
    return (text.replace("&quot;", '"').replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">")
            .replace("&amp;", "&"))


class S3Request:
    def __init__(self, handler):
        self.h = handler
        split = urlsplit(handler.path)
        self.raw_path = split.path or "/"
        self.query = parse_qsl(split.query, keep_blank_values=True)
        self.q = dict(self.query)
        bucket, _, key = self.raw_path.lstrip("/").partition("/")
        self.bucket, self.key = unquote(bucket), unquote(key)
        self.payload_hash = ""

    # -- authentication
    def authenticate(self):
        h = self.h
        fields = {}
        for item in h.headers["Authorization"][len("AWS4-HMAC-SHA256 "):].split(","):
            name, _, value = item.strip().partition("=")
            fields[name] = value
        try:
            access_key, date, region, service, terminal = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            signature = fields["Signature"]
        except (KeyError, ValueError):
            raise S3Error(400, "AuthorizationHeaderMalformed", "the Authorization header is malformed") from None
        secret = h.s3_keys.get(access_key)
        if secret is None:
            raise S3Error(403, "InvalidAccessKeyId", "the access key id is not this gateway's")
        amz_date = h.headers.get("x-amz-date") or ""
        try:
            when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise S3Error(403, "AccessDenied", "x-amz-date is missing or malformed") from None
        if abs(time.time() - when) > SKEW:
            raise S3Error(403, "RequestTimeTooSkewed", "the request time is too far from the gateway's")
        self.payload_hash = h.headers.get("x-amz-content-sha256") or ""
        if not self.payload_hash:
            raise S3Error(400, "InvalidRequest", "x-amz-content-sha256 is required")
        query = "&".join(sorted(quote(k, safe="-_.~") + "=" + quote(v, safe="-_.~") for k, v in self.query))
        headers = "".join(name + ":" + ",".join(" ".join(v.split()) for v in (h.headers.get_all(name) or [])) + "\n"
                          for name in signed)
        canonical = "\n".join([h.command, self.raw_path, query, headers, ";".join(signed), self.payload_hash])
        scope = "/".join([date, region, service, terminal])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + secret).encode()
        for part in (date, region, service, terminal):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise S3Error(403, "SignatureDoesNotMatch", "the request signature does not match")

    def body(self):
        h = self.h
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            stream = Chunked(h.rfile, "chunked")
        else:
            stream = Limited(h.rfile, int(h.headers.get("Content-Length") or 0))
        if self.payload_hash.startswith("STREAMING-") or "aws-chunked" in (h.headers.get("Content-Encoding") or ""):
            stream = Chunked(stream, "aws-chunked")
        return stream

    # -- dispatch
    def serve(self):
        self.authenticate()
        method = self.h.command
        for unsupported in ("acl", "versioning", "tagging", "policy", "cors", "lifecycle", "versions"):
            if unsupported in self.q:
                raise S3Error(501, "NotImplemented", "?" + unsupported + " is not supported by Lifeboat's gateway")
        if not self.bucket:
            if method == "GET":
                return self.list_buckets()
            raise S3Error(405, "MethodNotAllowed", "not on the service")
        places = self.places()
        if not self.key:
            if method == "HEAD":
                return s3_xml(self.h, 200, "")
            if method == "GET" and "location" in self.q:
                return s3_xml(self.h, 200, f'<LocationConstraint xmlns="{S3_XMLNS}"></LocationConstraint>')
            if method == "GET" and "uploads" in self.q:
                return s3_xml(self.h, 200, f'<ListMultipartUploadsResult xmlns="{S3_XMLNS}"><Bucket>{escape(self.bucket)}</Bucket>'
                              '<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>')
            if method == "GET":
                return self.list_objects(places)
            if method == "POST" and "delete" in self.q:
                return self.delete_objects(places)
            raise S3Error(405, "MethodNotAllowed", method + " on a bucket is not supported")
        try:
            check_key(self.key)  # noqa: F821 - layout's
        except ValueError:
            raise S3Error(400, "InvalidArgument", "the key is not 1 to 1024 bytes of UTF-8") from None
        if "uploadId" in self.q:
            return self.multipart(places)
        if method == "POST" and "uploads" in self.q:
            return self.create_upload()
        if method in ("GET", "HEAD"):
            return self.get_object(places)
        if method == "PUT":
            if self.h.headers.get("x-amz-copy-source"):
                raise S3Error(501, "NotImplemented", "copies are not supported by Lifeboat's gateway")
            return self.put_object(places)
        if method == "DELETE":
            places.remove(places.places(self.key))
            return s3_xml(self.h, 204, "")
        raise S3Error(405, "MethodNotAllowed", method + " is not supported")

    def places(self):
        name = self.bucket
        if not name or name.startswith(".") or not os.path.isdir(os.path.join(self.h.root, name)):
            raise S3Error(404, "NoSuchBucket", "no bucket " + name)
        try:
            return Bucket(self.h.root, name, layout_of(self.h.root, mark=False), self.h.mode)  # noqa: F821
        except LayoutError as exc:  # noqa: F821
            raise S3Error(503, "ServiceUnavailable", str(exc)) from None

    # -- buckets
    def list_buckets(self):
        names = sorted(e.name for e in os.scandir(self.h.root) if e.is_dir() and not e.name.startswith("."))
        items = "".join(f"<Bucket><Name>{escape(n)}</Name><CreationDate>{s3_time(os.stat(os.path.join(self.h.root, n)).st_mtime)}</CreationDate></Bucket>" for n in names)
        s3_xml(self.h, 200, f'<ListAllMyBucketsResult xmlns="{S3_XMLNS}"><Owner><ID>lifeboat</ID></Owner><Buckets>{items}'
               '</Buckets></ListAllMyBucketsResult>')

    def list_objects(self, places):
        q = self.q
        v2 = q.get("list-type") == "2"
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        try:
            limit = max(0, min(1000, int(q.get("max-keys", "1000"))))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "max-keys is not a number") from None
        if v2:
            token = q.get("continuation-token")
            after = base64.urlsafe_b64decode(token.encode()).decode() if token else q.get("start-after", "")
        else:
            after = q.get("marker", "")
        encode = (lambda s: quote(s, safe="/")) if q.get("encoding-type") == "url" else (lambda s: s)
        found = {}
        try:
            for key, data, meta in places.walk(prefix):
                if key is None:
                    key = (load_meta(data, meta)[1] or {}).get("key")  # noqa: F821 - objmeta's
                if key is not None and key.startswith(prefix):
                    found[key] = (data, meta)
        except NotAnObject as exc:  # noqa: F821 - layout's
            raise S3Error(409, "InvalidObjectState", str(exc)) from None
        contents, prefixes, last, truncated = [], [], "", False
        for key in sorted(found):
            if key <= after:
                continue
            if delimiter and delimiter in key[len(prefix):]:
                common = key[:len(prefix) + key[len(prefix):].index(delimiter) + len(delimiter)]
                if common <= after or (prefixes and prefixes[-1] == common):
                    continue
                entry = ("prefix", common)
            else:
                entry = ("key", key)
            if len(contents) + len(prefixes) >= limit:
                truncated = True
                break
            if entry[0] == "prefix":
                prefixes.append(entry[1])
            else:
                contents.append(key)
            last = entry[1]
        parts = [f'<ListBucketResult xmlns="{S3_XMLNS}"><Name>{escape(self.bucket)}</Name><Prefix>{escape(encode(prefix))}</Prefix><MaxKeys>{limit}</MaxKeys>']
        if delimiter:
            parts.append(f"<Delimiter>{escape(encode(delimiter))}</Delimiter>")
        if q.get("encoding-type") == "url":
            parts.append("<EncodingType>url</EncodingType>")
        parts.append("<IsTruncated>{}</IsTruncated>".format("true" if truncated else "false"))
        if v2:
            parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
            if q.get("continuation-token"):
                parts.append("<ContinuationToken>{}</ContinuationToken>".format(escape(q["continuation-token"])))
            if truncated:
                parts.append(f"<NextContinuationToken>{base64.urlsafe_b64encode(last.encode()).decode()}</NextContinuationToken>")
        else:
            parts.append(f"<Marker>{escape(encode(after))}</Marker>")
            if truncated:
                parts.append(f"<NextMarker>{escape(encode(last))}</NextMarker>")
        for key in contents:
            data, meta = found[key]
            try:
                st = os.stat(data)
            except OSError:
                continue
            parts.append(f"<Contents><Key>{escape(encode(key))}</Key><LastModified>{s3_time(st.st_mtime)}</LastModified><ETag>{escape(etag_of(data, meta, st))}</ETag><Size>{st.st_size}</Size>"
                         "<StorageClass>STANDARD</StorageClass></Contents>")
        for common in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{escape(encode(common))}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        s3_xml(self.h, 200, "".join(parts))

    def delete_objects(self, places):
        body = self.body().read().decode("utf-8", "replace")
        keys = xml_values(body, "Key")
        quiet = "<Quiet>true</Quiet>" in body.replace(" ", "")
        out = []
        for key in keys:
            try:
                check_key(key)  # noqa: F821
                places.remove(places.places(key))
                if not quiet:
                    out.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
            except ValueError:
                out.append(f"<Error><Key>{escape(key)}</Key><Code>InvalidArgument</Code><Message>bad key</Message></Error>")
        s3_xml(self.h, 200, '<DeleteResult xmlns="{}">{}</DeleteResult>'.format(S3_XMLNS, "".join(out)))

    # -- objects
    def get_object(self, places):
        h = self.h
        found = places.find(self.key)
        if not found:
            raise S3Error(404, "NoSuchKey", "no such key")
        data, meta, _ = found
        try:
            handle = open(data, "rb")
        except OSError:
            raise S3Error(404, "NoSuchKey", "no such key") from None
        with handle:
            st = os.fstat(handle.fileno())
            cached = (load_meta(data, meta, st)[1] or {})  # noqa: F821 - objmeta's
            start, end, status = 0, st.st_size - 1, 200
            wanted = h.headers.get("Range")
            if wanted:
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = min(int(match.group(2)), st.st_size - 1) if match.group(2) else st.st_size - 1
                    else:
                        start = max(0, st.st_size - int(match.group(2)))
                    if start > end or start >= st.st_size:
                        raise S3Error(416, "InvalidRange", "the range is not satisfiable")
                    status = 206
            h.send_response(status)
            h.send_header("Content-Type", cached.get("content_type") or "application/octet-stream")
            h.send_header("Content-Length", str(end - start + 1 if st.st_size else 0))
            h.send_header("ETag", etag_of(data, meta, st))
            h.send_header("Last-Modified", http_time(st.st_mtime))
            h.send_header("Accept-Ranges", "bytes")
            if status == 206:
                h.send_header("Content-Range", f"bytes {start}-{end}/{st.st_size}")
            h.end_headers()
            if h.command == "HEAD" or not st.st_size:
                return None
            handle.seek(start)
            left = end - start + 1
            while left:
                chunk = handle.read(min(S3_CHUNK, left))
                if not chunk:
                    break
                h.wfile.write(chunk)
                left -= len(chunk)
        return None

    def receive(self, tmp):
        """The request's body into ``tmp`` (fsynced): (SHA-256, MD5 hexdigests, size), checked against what
        the request says they are."""
        with open(tmp, "xb") as out:
            sha, md5, size = copy_hashed(self.body(), out, S3_CHUNK)  # noqa: F821 - layout's
        if re.fullmatch(r"[0-9a-f]{64}", self.payload_hash) and sha.hexdigest() != self.payload_hash:
            raise S3Error(400, "XAmzContentSHA256Mismatch", "the body's SHA-256 is not the signed one")
        given = self.h.headers.get("Content-MD5")
        if given and base64.b64decode(given) != md5.digest():
            raise S3Error(400, "BadDigest", "the body's MD5 is not the Content-MD5 given")
        return sha.hexdigest(), md5.hexdigest(), size

    def put_object(self, places):
        tmp = partial_path(self.h.root)
        try:
            sha, md5, size = self.receive(tmp)
            place_object(places, self.key, tmp, sha, md5, self.h.headers.get("Content-Type"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        s3_xml(self.h, 200, "", {"ETag": '"' + md5 + '"'})

    # -- multipart uploads: <root>/.tmp/u-<id>/ holds the upload's key and its parts until it completes
    def create_upload(self):
        upload = uuid.uuid4().hex
        folder = os.path.join(self.h.root, ".tmp", "u-" + upload)
        os.makedirs(folder, mode=0o700)
        with open(os.path.join(folder, "upload.json"), "w") as handle:
            json.dump({"bucket": self.bucket, "key": self.key, "content_type": self.h.headers.get("Content-Type"),
                       "started": time.time()}, handle)
        s3_xml(self.h, 200, f'<InitiateMultipartUploadResult xmlns="{S3_XMLNS}"><Bucket>{escape(self.bucket)}</Bucket><Key>{escape(self.key)}</Key>'
               f'<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>')

    def multipart(self, places):
        upload = self.q["uploadId"]
        folder = os.path.join(self.h.root, ".tmp", "u-" + upload)
        try:
            with open(os.path.join(folder, "upload.json")) as handle:
                info = json.load(handle)
        except (OSError, ValueError):
            info = None
        if not re.fullmatch(r"[0-9a-f]{32}", upload) or not info or (info["bucket"], info["key"]) != (
                self.bucket, self.key):
            raise S3Error(404, "NoSuchUpload", "no such upload")
        method = self.h.command
        if method == "PUT":
            try:
                number = int(self.q.get("partNumber", ""))
            except ValueError:
                number = 0
            if not 1 <= number <= 10000:
                raise S3Error(400, "InvalidArgument", "partNumber must be 1 to 10000")
            tmp = os.path.join(folder, f"part-{number}.{uuid.uuid4().hex[:8]}")
            try:
                _, md5, _ = self.receive(tmp)
                os.replace(tmp, os.path.join(folder, f"part-{number}"))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return s3_xml(self.h, 200, "", {"ETag": '"' + md5 + '"'})
        if method == "DELETE":
            shutil.rmtree(folder, ignore_errors=True)
            return s3_xml(self.h, 204, "")
        if method == "GET":
            items = []
            for name in sorted(os.listdir(folder), key=lambda n: int(n[5:]) if n[5:].isdigit() else 0):
                if name.startswith("part-") and name[5:].isdigit():
                    path = os.path.join(folder, name)
                    items.append(f"<Part><PartNumber>{name[5:]}</PartNumber><ETag>\"{md5_file(path)}\"</ETag><Size>{os.path.getsize(path)}</Size></Part>")
            return s3_xml(self.h, 200, '<ListPartsResult xmlns="{}"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}'
                          '</UploadId>{}<IsTruncated>false</IsTruncated></ListPartsResult>'.format(
                              S3_XMLNS, escape(self.bucket), escape(self.key), upload, "".join(items)))
        if method != "POST":
            raise S3Error(405, "MethodNotAllowed", method + " on an upload")
        body = self.body().read().decode("utf-8", "replace")
        numbers = [int(n) for n in xml_values(body, "PartNumber")]
        tags = [t.strip().strip('"') for t in xml_values(body, "ETag")]
        if not numbers or len(numbers) != len(tags) or numbers != sorted(set(numbers)):
            raise S3Error(400, "InvalidPartOrder", "the parts must be listed once each, in ascending order")
        tmp = partial_path(self.h.root)
        sha, whole, digests, size = hashlib.sha256(), hashlib.md5(), b"", 0
        try:
            with open(tmp, "xb") as out:
                for number, tag in zip(numbers, tags):  # noqa: B905 - equal lengths (checked above); the host may be 3.9
                    part_md5 = hashlib.md5()
                    try:
                        with open(os.path.join(folder, f"part-{number}"), "rb") as part:
                            for chunk in iter(lambda: part.read(S3_CHUNK), b""):
                                part_md5.update(chunk)
                                sha.update(chunk)
                                whole.update(chunk)
                                out.write(chunk)
                                size += len(chunk)
                    except FileNotFoundError:
                        raise S3Error(400, "InvalidPart", f"part {number} was not uploaded") from None
                    if part_md5.hexdigest() != tag:
                        raise S3Error(400, "InvalidPart", f"part {number} has another ETag")
                    digests += part_md5.digest()
                out.flush()
                os.fsync(out.fileno())
            tag = f"{hashlib.md5(digests).hexdigest()}-{len(numbers)}"
            place_object(places, self.key, tmp, sha.hexdigest(), whole.hexdigest(), info.get("content_type"),
                         etag=tag)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        s3_xml(self.h, 200, f'<CompleteMultipartUploadResult xmlns="{S3_XMLNS}"><Bucket>{escape(self.bucket)}</Bucket><Key>{escape(self.key)}</Key>'
               f'<ETag>"{tag}"</ETag></CompleteMultipartUploadResult>')


def partial_path(root):
    folder = os.path.join(root, ".tmp")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def place_object(places, key, tmp, sha, md5, content_type, etag=None):
    """A complete file ``tmp`` as ``key``'s object: the store's mode and owner, its meta cache, renamed
    into its place (toolkit/stores/layout.py), an older copy under its other name removed."""
    places.settle(tmp)
    path, meta, elsewhere = places.target(key)
    st = os.stat(tmp)
    record = {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "mtime_s": int(st.st_mtime),
              "sha256": sha, "md5": md5, "content_type": content_type}
    if etag:
        record["etag"] = etag
    store_meta(tmp, meta, record)  # noqa: F821 - objmeta's
    os.replace(tmp, path)
    places.remove(elsewhere)


def etag_of(data, meta, st):
    """The object's ETag: its MD5 where it is known (or the multipart form it was uploaded in); else a
    tag from its SHA-256, or its size and time, in multipart form (a client does not take it for an MD5)."""
    cached = load_meta(data, meta, st)[0] or {}  # noqa: F821 - objmeta's
    if cached.get("etag"):
        return '"' + cached["etag"] + '"'
    if cached.get("md5"):
        return '"' + cached["md5"] + '"'
    if cached.get("sha256"):
        return '"' + cached["sha256"][:32] + '-1"'
    return '"' + hashlib.md5(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest() + '-1"'


def md5_file(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(S3_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
