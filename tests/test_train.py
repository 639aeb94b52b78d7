"""The C library's allocator keeps freed memory once :func:`keep_freed_memory` is called,
and training computes the same numbers with it.

Measured in fresh processes: the setting lasts for the process that makes it.
"""

import sys
from pathlib import Path

import pytest
from conftest import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc's allocator")

#: Allocates (and frees) a 48 MiB tensor 2 + ALLOCATIONS times; prints how many of the
#: last ALLOCATIONS paid a page fault for at least half of their pages (the first two grow
#: the heap).
ALLOCATIONS = 20
FAULTS = f"""
import resource, sys, torch
from normlab.train import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    torch.ones(12 << 20)
faulted = 0
for _ in range({ALLOCATIONS}):
    before = faults()
    torch.ones(12 << 20)
    faulted += faults() - before > (48 << 20) // 4096 // 2
print(faulted)
"""

#: Trains the book's network for 5 steps of 128 synthetic images, with or without the
#: setting (``fit`` makes it; "default" replaces it with nothing), in the precision this
#: machine computes natively; prints a digest of the trained weights.
TRAIN = """
import hashlib, sys, torch
sys.path.insert(0, sys.argv[2])
from conftest import CLASSES, synthetic_images
import normlab.train
from normlab import CIFAR10, Config
if sys.argv[1] == "default":
    normlab.train.keep_freed_memory = lambda: False
data = CIFAR10(*synthetic_images(640, 0), *synthetic_images(10, 1), CLASSES, "synthetic")
config = Config(epochs=1, batch_size=128, precision="auto")
model = config.build_model()
normlab.train.fit(model, data, config, progress=False)
digest = hashlib.sha256()
for tensor in model.state_dict().values():
    digest.update(tensor.cpu().numpy().tobytes())
print(digest.hexdigest())
"""


def child(script: str, *args: str) -> str:
    return run_python("-c", script, *args, timeout=300).strip()


def test_keep_freed_memory_reuses_freed_tensors_without_page_faults():
    default = int(child(FAULTS, "default"))
    if default < ALLOCATIONS // 2:
        pytest.skip(f"only {default} of {ALLOCATIONS} allocations paid page faults without "
                    f"the setting (huge pages?): nothing for it to save here")
    # one allocation may still find its freed block taken (the heap grows once more)
    assert int(child(FAULTS, "keep")) <= 1


def test_fit_trains_the_same_weights_bit_for_bit_with_the_allocator_setting():
    tests = str(Path(__file__).parent)
    assert child(TRAIN, "keep", tests) == child(TRAIN, "default", tests)

