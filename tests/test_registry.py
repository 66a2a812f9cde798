"""Every family's Python schema registry (sslfast/ops/_<family>_schema.py, which the fakes and
autograd are written against) matches the schemas each backend registered: the C++ ones in
csrc/sslfast.cpp and the Triton ones in sslfast/triton/<family>.py."""

import re

import pytest
import torch

import sslfast
from sslfast import _native
from sslfast.ops import _contrastive_schema, _diffusion_schema, _gnn_schema, _masking_schema

# family -> (schemas, namespaces whose backends implement the family)
FAMILIES = {
    "contrastive": (_contrastive_schema.SCHEMAS, ("sslfast", "sslfast_triton")),
    "diffusion": (_diffusion_schema.SCHEMAS, ("sslfast", "sslfast_triton")),
    "masking": (_masking_schema.SCHEMAS, ("sslfast", "sslfast_triton")),
    "gnn": (_gnn_schema.SCHEMAS, ("sslfast",)),
}
BUILT = {"sslfast": _native.AVAILABLE, "sslfast_triton": sslfast.triton.AVAILABLE}
CASES = [(family, ns) for family, (_, namespaces) in FAMILIES.items() for ns in namespaces]


def _signature(schema: str) -> str:
    """The schema without its leading ``namespace::name`` and without whitespace."""
    return re.sub(r"\s", "", re.sub(r"^[\w:.]+", "", schema))


@pytest.mark.parametrize("family, namespace", CASES)
def test_schemas_match_the_python_registry(family, namespace):
    if not BUILT[namespace]:
        pytest.skip(f"{namespace} ops not built here")
    schemas, _ = FAMILIES[family]
    for name, schema in schemas.items():
        registered = str(getattr(getattr(torch.ops, namespace), name).default._schema)
        assert _signature(registered) == _signature(schema), (name, registered)
