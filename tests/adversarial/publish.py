"""Replace the bundle at TARGET by a copy of SOURCE, the way `bld-export onnx --force` does
(bld_runtime.files.replacing_directory): for the crash tests, without minutes of exporting."""

import shutil
import sys

from bld_runtime.files import replacing_directory

source, target = sys.argv[1:]
with replacing_directory(target, f"bundle {target}") as staged:
    shutil.copytree(source, staged, dirs_exist_ok=True)
