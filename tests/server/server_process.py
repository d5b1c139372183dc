"""Starting and stopping a server under test (`dsv4 serve` or serve_scripted): reads the port it
prints on stderr, waits for GET /health, and stops it with a signal, returning its exit status.
Shared by openai_client_test.py and load_test.py."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

SKIP = 77  # ctest's SKIP_RETURN_CODE for these tests


def http_get(url, timeout=10):
    """(status, body text) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    """The value of one sample line `name value` in a Prometheus exposition (0 when absent)."""
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class ServerProcess:
    def __init__(self, argv, label, start_timeout=120):
        self.label = label
        self.lines = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._listening = threading.Event()
        self.url = None
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._listening.wait(start_timeout):
            self.proc.kill()
            raise RuntimeError(f"{label}: no 'listening on' line within {start_timeout} s:\n" + "".join(self.lines))

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            sys.stderr.write(f"[{self.label}] {line}")
            m = re.search(r"listening on (http://\S+)", line)
            if m and not self._listening.is_set():
                self.url = m.group(1)
                self._listening.set()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}")
            if http_get(self.url + "/health")[0] == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.label}: /health not 200 within {timeout} s")

    def metrics(self):
        status, text = http_get(self.url + "/metrics")
        assert status == 200, status
        return text

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signals the server and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"{self.label} did not exit within {timeout} s of signal {sig}")
        finally:
            self.proc.stderr.close()
