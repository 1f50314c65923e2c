"""The math-verify worker process behind `rpt.reward.answer.MathVerifier` (not imported by rpt).

Run as `python -I -u math_verify_worker.py MEMORY_LIMIT_MB`. It reads one JSON object per line on stdin,
{"prediction": str, "answer": str}, and writes one per line on stdout, {"correct": bool, "error": str};
its first line is {"ready": true}, once math-verify is imported. It uses the standard library and
math-verify only (no rpt, no torch), so it starts in ~1 s, and `-I` keeps its own directory off sys.path.

Both strings are parsed as the content of a `\\boxed{}` (as verl's math-verify reward does) and compared
with `math_verify.verify(gold, prediction)`. math-verify's own timeouts are off (they use signal.alarm):
the parent enforces the time limit by killing this process. The address-space limit turns an expression
whose value does not fit in memory (9^{9^{9^{9}}}) into a MemoryError, reported as an error, instead of
taking the machine's memory.
"""
import json
import logging
import resource
import sys
from functools import lru_cache


def main() -> None:
    memory_limit_bytes = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    logging.disable(logging.WARNING)  # math-verify warns once that its (signal) timeout is off: by design
    from math_verify import parse, verify

    @lru_cache(maxsize=4096)
    def parse_boxed(text: str):
        return parse("\\boxed{" + text + "}", parsing_timeout=None)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            correct = bool(verify(parse_boxed(request["answer"]), parse_boxed(request["prediction"]),
                                  timeout_seconds=None))
            reply = {"correct": correct, "error": ""}
        except BaseException as error:  # noqa: BLE001 - any failure of the verifier is a wrong answer
            reply = {"correct": False, "error": type(error).__name__}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
