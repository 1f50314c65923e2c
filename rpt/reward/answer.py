r"""The answer-verification reward of RLVR (Section 4.1 of the paper, Table 2): 1 iff the final answer of a
response is mathematically equal to the reference answer, judged by Hugging Face's math-verify.

The answer is the content of the last `\boxed{}` after the last `</think>` (the same extraction as the
next-token reward, extract.py): no `</think>`, no box after it, or an unclosed last box scores 0.

Time limit. math-verify's own timeout uses signal.alarm, which works only in a process's main thread, and
sympy can run for hours or fill memory on a pathological expression (`9^{9^{9^{9}}}`,
`\sum_{n=1}^{10^{9}} n^{n}`). So every comparison runs in a worker process (math_verify_worker.py, started
once per `MathVerifier` and reused); the caller waits for its reply with a deadline, and a worker that
misses it is killed and replaced on the next call. That works in every rank and in any thread; a timeout
scores 0 and is counted (the loop logs `reward/verify_timeouts`). The worker runs with an address-space
limit, so an expression too large for memory is an error there (scored 0, counted), not in the trainer.

Deviations from the paper: the paper does not say how answers are extracted or compared; this is the
extraction of its next-token task and the verifier verl's math reward uses.
"""
import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import torch

from rpt.reward.extract import THINK_END, extract_prediction

WORKER = Path(__file__).with_name("math_verify_worker.py")


class MathVerifier:
    """Compares predictions with reference answers in a reused worker process, with a time limit per call.

    Thread-safe (one comparison at a time per verifier). `counts` holds "timeouts" (the worker was killed at
    the deadline), "errors" (math-verify raised, or the worker died) and "restarts" (workers started after
    the first)."""

    def __init__(self, timeout_s: float = 5.0, memory_limit_mb: int = 4096, startup_timeout_s: float = 120.0):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s, self.memory_limit_mb, self.startup_timeout_s = timeout_s, memory_limit_mb, startup_timeout_s
        self.counts: Counter = Counter()
        self._process: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._started = 0
        atexit.register(self.close)

    def _start(self) -> None:
        # -I: isolated (no PYTHONPATH, no script directory on sys.path): the worker imports math-verify only
        self._process = subprocess.Popen([sys.executable, "-I", "-u", str(WORKER), str(self.memory_limit_mb)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._buffer = b""
        self.counts["restarts"] += self._started > 0
        self._started += 1
        ready = self._read_line(time.monotonic() + self.startup_timeout_s)
        if ready is None or not json.loads(ready).get("ready"):
            self._kill()
            raise RuntimeError(f"the math-verify worker ({WORKER}) did not start within {self.startup_timeout_s} s "
                               f"(is math-verify installed? pip install -e . installs it)")

    def _read_line(self, deadline: float) -> bytes | None:
        """The worker's next line, or None at the deadline or when the worker exits."""
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None  # the worker exited
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                pipe.close()
            self._process = None

    def verify(self, prediction: str, answer: str) -> tuple[bool, str]:
        """-> (correct, status), status one of "ok", "timeout", "error"."""
        with self._lock:
            if self._process is None:
                self._start()
            request = json.dumps({"prediction": prediction, "answer": answer}).encode() + b"\n"
            try:
                self._process.stdin.write(request)
                self._process.stdin.flush()
            except BrokenPipeError:
                line = None
            else:
                line = self._read_line(time.monotonic() + self.timeout_s)
            if line is None:
                status = "timeout" if self._process.poll() is None else "error"
                self.counts[status + "s"] += 1
                self._kill()  # a hung worker is replaced on the next call
                return False, status
            reply = json.loads(line)
            if reply["error"]:
                self.counts["errors"] += 1
                return False, "error"
            return reply["correct"], "ok"

    def close(self) -> None:
        with self._lock:
            self._kill()


_shared_verifiers: dict[float, MathVerifier] = {}
_shared_lock = threading.Lock()


def shared_verifier(timeout_s: float = 5.0) -> MathVerifier:
    """This process's verifier with that time limit, started on first use and reused."""
    with _shared_lock:
        if timeout_s not in _shared_verifiers:
            _shared_verifiers[timeout_s] = MathVerifier(timeout_s)
        return _shared_verifiers[timeout_s]


def answer_reward(response: str, answer: str, verifier: MathVerifier | None = None) -> float:
    r"""1.0 iff the last `\boxed{}` after the last `</think>` of `response` is equal to `answer` by
    math-verify within the verifier's time limit (this process's shared 5 s verifier by default), else 0.0.
    Never raises on response content."""
    rewards, _ = answer_rewards([response], [answer], verifier)
    return float(rewards[0])


def answer_rewards(responses: list[str], answers: list[str | list[str]], verifier: MathVerifier | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Score N responses against their N reference answers (a string, or a list of strings any of which is
    correct) -> rewards (N,) float32 and diagnostics, each (N,) float32: had_think, had_box (as
    compute_rewards), verify_timeout (a comparison hit the time limit) and verify_error (math-verify failed
    on one)."""
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    verifier = verifier or shared_verifier()
    rewards, had_think, had_box, timeouts, errors = [], [], [], [], []
    for response, answer in zip(responses, answers):
        prediction = extract_prediction(response)
        correct, statuses = False, []
        if prediction is not None and prediction.strip():
            for reference in [answer] if isinstance(answer, str) else answer:
                if prediction.strip() == reference.strip():
                    correct = True  # identical text needs no verifier
                else:
                    correct, status = verifier.verify(prediction, reference)
                    statuses.append(status)
                if correct:
                    break
        rewards.append(float(correct))
        had_think.append(prediction is not None or THINK_END in response)
        had_box.append(prediction is not None)
        timeouts.append("timeout" in statuses)
        errors.append("error" in statuses)
    diagnostics = {name: torch.tensor(values, dtype=torch.float32) for name, values in
                   (("had_think", had_think), ("had_box", had_box), ("verify_timeout", timeouts),
                    ("verify_error", errors))}
    return torch.tensor(rewards, dtype=torch.float32), diagnostics  # (N,)
