"""The object store that holds a remote state (`state_path: s3://bucket/prefix/state.duckdb`): the one
module that imports `obstore` (the `remote` extra), loaded only when a project's state is remote.

`Bucket` reads and writes whole objects, with the conditional writes the remote state and its lock rely
on: create only if absent (`If-None-Match: *`) and replace only the version read (`If-Match: <ETag>`).
A write refused by its condition raises `Conflict`; every other failure a RemoteStateError whose message
names the URL (never a secret) and what to do. Credentials and the endpoint come only from the
provider's standard environment: for S3 `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` (MinIO, R2, a test server; plain http:// needs
`AWS_ALLOW_HTTP=true`); for gs:// `GOOGLE_SERVICE_ACCOUNT` and for az:// `AZURE_STORAGE_ACCOUNT_NAME`,
`AZURE_STORAGE_ACCOUNT_KEY` as obstore reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import RemoteStateError
from engine.sql import first_line

SCHEMES = ("s3", "gs", "az")
# environment variables holding credentials, per scheme: registered as secrets, named in errors
CREDENTIAL_ENV = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "gs": ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_APPLICATION_CREDENTIALS"),
    "az": ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY"),
}
CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(minutes=10)      # a whole state file goes in one request
RETRIES = 3                                  # 5xx, dropped connections: then the error


class Conflict(Exception):
    """A conditional write refused: the object exists (create) or is not the version read (replace)."""


@dataclass(frozen=True)
class StateUrl:
    url: str
    scheme: str
    bucket: str
    key: str

    @property
    def lock_key(self) -> str:
        return self.key + ".lock"


def parse_state_url(url: str) -> StateUrl:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    key = parts.path.lstrip("/")
    if scheme not in SCHEMES or not parts.netloc or not key or key.endswith("/"):
        raise RemoteStateError(f"state_path {url!r} is not a state object URL: write "
                               "s3://BUCKET/PREFIX/state.duckdb (or gs://, az://)")
    return StateUrl(url, scheme, parts.netloc, key)


@dataclass(frozen=True)
class Stored:
    etag: str
    size: int


class Bucket:
    """The bucket (or container) of one state URL."""

    def __init__(self, where: StateUrl) -> None:
        try:
            from obstore.store import from_url
        except ImportError:
            raise RemoteStateError(f"state_path {where.url} needs the object-store library: "
                                   "pip install 'reflow[remote]'") from None
        self.where = where
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL", "") if where.scheme == "s3" else ""
        client: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT,
                                  "allow_http": os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true"}
        retry: dict[str, Any] = {"max_retries": RETRIES, "retry_timeout": timedelta(seconds=30),
                                 "backoff": {"init_backoff": timedelta(milliseconds=100),
                                             "max_backoff": timedelta(seconds=5), "base": 2}}
        try:
            self.store = from_url(f"{where.scheme}://{where.bucket}", client_options=client,   # type: ignore[call-overload]
                                  retry_config=retry)
        except Exception as exc:  # noqa: BLE001 - obstore's configuration errors: one clear line
            raise self._problem("configure the client for", exc) from exc

    # ------------------------------------------------------------------ reads

    def probe(self) -> None:
        """Reach the bucket, with these credentials, before anything is sent: RemoteStateError if not."""
        import obstore

        folder = self.where.key.rpartition("/")[0]
        try:
            obstore.list(self.store, folder or None, chunk_size=1).collect()
        except Exception as exc:  # noqa: BLE001 - sorted in _problem
            raise self._problem("list", exc) from exc

    def _absent(self, exc: FileNotFoundError) -> None:
        """A missing object reads as None (the caller returns it); a missing bucket is a setup problem, named."""
        if "NoSuchBucket" in str(exc):
            raise self._problem("read", exc) from exc

    def head(self, key: str) -> Stored | None:
        import obstore

        try:
            meta = obstore.head(self.store, key)
        except FileNotFoundError as exc:
            self._absent(exc)
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._problem("read", exc) from exc
        return Stored(str(meta["e_tag"]), int(meta["size"]))

    def read(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag; None when there is none."""
        import obstore

        try:
            got = obstore.get(self.store, key)
            data = bytes(got.bytes())
        except FileNotFoundError as exc:
            self._absent(exc)
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._problem("read", exc) from exc
        return data, str(got.meta["e_tag"])

    def download(self, key: str, dest: Path) -> str | None:
        """Write the object to `dest` (through a temporary file); its ETag, or None when there is none."""
        import obstore

        tmp = dest.with_name(dest.name + ".download")
        try:
            got = obstore.get(self.store, key)
            with open(tmp, "wb") as out:
                for chunk in got.stream(min_chunk_size=8 * 1024 * 1024):
                    out.write(chunk)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            self._absent(exc)
            return None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RemoteStateError(f"cannot write the working copy {dest}: {exc.strerror}") from exc
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise self._problem("download", exc) from exc
        return str(got.meta["e_tag"])

    # ------------------------------------------------------------------ writes

    def put(self, key: str, data: bytes | Path, *, if_match: str | None, force: bool = False) -> str:
        """Write `data` as `key`: only if absent (`if_match` None), only over the version `if_match`, or
        unconditionally (`force`). The new ETag; Conflict when the condition fails."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = "overwrite" if force else ("create" if if_match is None else {"e_tag": if_match})
        body = data.read_bytes() if isinstance(data, Path) else data
        try:
            done = obstore.put(self.store, key, body, mode=mode, use_multipart=False)
        except (AlreadyExistsError, PreconditionError) as exc:
            raise Conflict(first_line(exc)) from exc
        except FileNotFoundError as exc:        # If-Match on an object deleted since it was read
            if if_match is not None and "NoSuchBucket" not in str(exc):
                raise Conflict(first_line(exc)) from exc
            raise self._problem("upload", exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise self._problem("upload", exc) from exc
        return str(done["e_tag"])

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, key)
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise self._problem("delete", exc) from exc

    # ------------------------------------------------------------------ errors

    def _problem(self, action: str, exc: BaseException) -> RemoteStateError:
        """One sentence for a failed request: what, where, and what to do (never the credentials)."""
        url, scheme = self.where.url, self.where.scheme
        text = str(exc)
        low = text.lower()
        ids, keys = CREDENTIAL_ENV[scheme]
        at = f" at {self.endpoint}" if self.endpoint else ""
        if "nosuchbucket" in low or "containernotfound" in low:
            why = (f"the bucket '{self.where.bucket}' does not exist{at}: create it, or fix state_path in "
                   "reflow_project.yml")
        elif "169.254.169.254" in text or "credential" in low:     # before 403: a denied metadata server
            why = (f"no credentials were found: set {ids} and {keys} in the environment (or run with an "
                   "instance role)")
        elif "account must be specified" in low:
            why = "no storage account was given: set AZURE_STORAGE_ACCOUNT_NAME (and its key) in the environment"
        elif type(exc).__name__ in ("PermissionDeniedError", "UnauthenticatedError") or " 403 " in text \
                or "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low:
            why = (f"access was refused: check {ids} and {keys} in the environment, and that they may read, "
                   f"write and delete objects under {url.rpartition('/')[0]}/")
        elif "builder error" in low and self.endpoint.startswith("http://"):
            why = (f"AWS_ENDPOINT_URL {self.endpoint} is plain http: set AWS_ALLOW_HTTP=true to allow it "
                   "(a local test server), or use https")
        elif "error sending request" in low or "connect" in low or "dns" in low or "timed out" in low:
            where = self.endpoint or f"the {scheme} endpoint"
            why = (f"the object store cannot be reached ({where}): check the network"
                   + (" and AWS_ENDPOINT_URL" if scheme == "s3" else ""))
        else:
            why = first_line(exc)[:300]
        return RemoteStateError(f"cannot {action} the remote state {url}: {why}")
