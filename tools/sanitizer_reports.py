"""Read the sanitizer logs of a run (tools/sanitize.sh) and fail on any report that is ours.

ASan and UBSan errors are always ours to fix. A leak counts when its allocation stack passes
through lstmcpp's extension module (_core); Python and NumPy leave memory allocated at exit.
"""

import pathlib
import re
import sys

OURS = re.compile(r"lstmcpp|_core\.cpython")


def main(log_dir: str) -> int:
    errors, our_leaks, leaks = [], [], 0
    for log in sorted(pathlib.Path(log_dir).glob("*")):
        text = log.read_text(errors="replace")
        for match in re.finditer(r"ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer).*", text):
            errors.append(f"{log.name}: {match.group(0)}")
        if "runtime error:" in text:
            errors.append(f"{log.name}: UBSan runtime error")
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text):
            if block.startswith(("Direct leak of", "Indirect leak of")):
                leaks += 1
                if OURS.search(block):
                    our_leaks.append(f"{log.name}: " + block.strip()[:2000])
    for e in errors:
        print("sanitizer error:", e)
    for leak in our_leaks:
        print("leak through lstmcpp:\n" + leak)
    print(f"sanitizer reports: {len(errors)} errors, {len(our_leaks)} leaks through lstmcpp "
          f"({leaks} leak records in all, the rest from the interpreter's exit)")
    return 1 if errors or our_leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
