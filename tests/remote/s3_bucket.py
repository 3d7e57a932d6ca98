"""Helpers of the remote-state tests: a bucket of the S3 test server, read and written with boto3 as another
tool would, and a project pointed at it."""

from __future__ import annotations

import shutil
from pathlib import Path

SECRET = "s3cret-AWS-key-0123456789abcdefXYZ"      # the bucket's secret key: must appear nowhere
UPLOAD_EVERY = 0.2          # seconds: the tests' upload interval during a send
LOCK_EXPIRY = 5.0           # seconds: a dead holder's lock goes stale this fast in tests (renewed every 1.7 s: a
                            # lease check before each request must survive a loaded CI machine)


class S3:
    """One bucket of the moto server, read and written with boto3 (as another tool or writer would)."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.bucket = bucket
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key=SECRET)
        self.client.create_bucket(Bucket=bucket)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self) -> list[str]:
        found = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(o["Key"] for o in found)


STATE_KEY = "team/prod/state.duckdb"


def use_remote_state(project: Path, url: str, **settings: float) -> None:
    """Point a project's state_path at `url`, with the tests' short upload interval and lock expiry."""
    file = project / "reflow_project.yml"
    text = file.read_text()
    assert "state_path: .reflow/state.duckdb" in text
    options = {"upload_every": UPLOAD_EVERY, "lock_expiry": LOCK_EXPIRY, **settings}
    inline = ", ".join(f"{k}: {v}" for k, v in options.items())
    file.write_text(text.replace("state_path: .reflow/state.duckdb",
                                 f"state_path: {url}\nremote_state: {{{inline}}}"))


def second_folder(project: Path, tmp_path: Path, name: str = "elsewhere") -> Path:
    """The same project checked out in another working folder (another runner's machine): no .reflow/."""
    dest = tmp_path / name
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns(".reflow"))
    return dest
