"""Install the wheels in a directory without pip (the offline base has none).

A wheel is a zip laid out for site-packages; these wheels have no scripts or
data files, so extracting them is a complete install.
"""

import sys
import sysconfig
import zipfile
from pathlib import Path


def _has_cffi_backend() -> bool:
    try:
        import _cffi_backend  # noqa: F401
    except ImportError:
        return False
    return True


def main(wheel_dir: str) -> None:
    target = Path(sysconfig.get_paths()["platlib"])
    target.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(Path(wheel_dir).glob("*.whl")):
        if wheel.name.startswith("cffi-") and _has_cffi_backend():
            print(f"skip {wheel.name}: _cffi_backend already provided")
            continue
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
        print(f"installed {wheel.name} into {target}")


if __name__ == "__main__":
    main(sys.argv[1])
