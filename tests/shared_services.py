"""The services processes on several machines share, started by the tests: moto's standalone S3 server
(standing in for a real object store) and a Jupyter Kernel Gateway (the code sessions' kernels)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx

from tests.conftest import free_port, stop_process, wait_for

BUCKET = "assistgraph-files"
PREFIX = "tests"
CREDENTIALS = dict(AWS_ACCESS_KEY_ID="moto-key", AWS_SECRET_ACCESS_KEY="moto-secret", AWS_REGION="us-east-1")
GATEWAY_TOKEN = "gateway-token-for-tests"


def start_moto(workdir: Path, name: str):
    """moto's standalone S3 server on an ephemeral port, with the store's bucket: the process and a
    boto3 client of it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.HTTPError:
            if time.time() > deadline or proc.poll() is not None:
                stop_process(proc)
                raise RuntimeError(log_path.read_text(errors="replace")) from None
            time.sleep(0.2)
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name=CREDENTIALS["AWS_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    return proc, s3


def s3_store_env(endpoint: str) -> dict[str, str]:
    """The settings of a process whose file store is the bucket at `endpoint`."""
    return dict(ASSISTGRAPH_FILE_STORE=f"s3://{BUCKET}/{PREFIX}", AWS_ENDPOINT_URL=endpoint, **CREDENTIALS)


def start_kernel_gateway(home: Path):
    """A Jupyter Kernel Gateway on loopback, working in `home`: the process and its base URL."""
    executable = shutil.which("jupyter-kernelgateway", path=str(Path(sys.executable).parent))
    assert executable, "jupyter-kernel-gateway is part of the test extra"
    home.mkdir(exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [executable, "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.port={port}", f"--KernelGatewayApp.auth_token={GATEWAY_TOKEN}"],
        cwd=home, env={"PATH": os.environ["PATH"], "HOME": str(home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url), timeout=30, interval=0.1)
    return proc, url


def gateway_env(url: str, home: Path) -> dict[str, str]:
    """The settings of a process whose code sessions run on the gateway at `url`."""
    return dict(
        ASSISTGRAPH_CODE_INTERPRETER_BACKEND="gateway",
        ASSISTGRAPH_CODE_INTERPRETER_GATEWAY_URL=url,
        ASSISTGRAPH_CODE_INTERPRETER_GATEWAY_TOKEN=GATEWAY_TOKEN,
        ASSISTGRAPH_CODE_INTERPRETER_GATEWAY_DATA_DIR=str(home / "data"),
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api", headers={"Authorization": f"token {GATEWAY_TOKEN}"}).status_code == 200
    except httpx.HTTPError:
        return False
