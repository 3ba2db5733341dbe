"""torch-fidelity's own calculate_metrics on two image folders, for comparison with `distgan eval --real --fake`.

Run it with a Python whose torchvision imports (torch-fidelity's full package needs it), e.g. a venv made by
`pip install torch==2.14.1 torchvision==0.29.1 torch-fidelity==0.4.0`; distgan itself is not imported here.
    python benchmarks/fidelity_reference.py FAKE_DIR REAL_DIR WEIGHTS KID_SUBSET_SIZE > reference.json
"""

import json
import sys

import torch_fidelity

fake, real, weights, kid_subset_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
metrics = torch_fidelity.calculate_metrics(
    input1=fake,
    input2=real,
    cuda=False,
    feature_extractor="inception-v3-compat",  # all four on Inception (its own default for prc is VGG16)
    fid=True,
    kid=True,
    prc=True,
    isc=True,
    feature_extractor_weights_path=weights,
    kid_subset_size=kid_subset_size,
    verbose=False,
    save_cpu_ram=True,
)
print(json.dumps({"version": torch_fidelity.__version__, **metrics}))
