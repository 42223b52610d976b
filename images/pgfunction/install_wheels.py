"""Install the wheels of a directory without pip (the offline base has none).

A pure-Python wheel is a zip laid out for site-packages; these have no scripts or data
files, so extracting them is a complete install (dist-info included, which pg8000 reads
for its version at import).
"""

import sys
import sysconfig
import zipfile
from pathlib import Path


def main(wheel_dir: str) -> None:
    target = Path(sysconfig.get_paths()["purelib"])
    target.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(Path(wheel_dir).glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
        print(f"installed {wheel.name} into {target}")


if __name__ == "__main__":
    main(sys.argv[1])
