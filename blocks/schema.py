"""A block's JSON schema, built once per class.

Prefect's `Block.save` asks for the block class's JSON schema once per field while it serialises
the block (`Block._field_has_secrets`, prefect 3.x), and the schema of a block holding another
block (BackupRepository's S3Bucket, with its AwsCredentials) costs about 50 ms of CPU: one save of
a BackupRepository built the same schema some 24 times, about 1 s of CPU, on every `vaultflow
fleet deploy`, demo setup and saved test block. A concrete block class's schema does not change
while the process runs, so it is built once per class and arguments; every caller gets its own
copy, free to change.

Not cached: abstract block interfaces (TargetBlock), whose schema lists the target block types
registered so far and so changes as more register.
"""

from __future__ import annotations

import copy
import functools
from abc import ABC
from typing import Any


class SchemaOnce:
    """Mixin for a Block subclass (put it before Block in the bases): `model_json_schema` is
    Block's, computed once per (class, arguments) and deep-copied to each caller."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if ABC in cls.__bases__:
            return super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
        return copy.deepcopy(_schema_of(cls, args, tuple(sorted(kwargs.items()))))


@functools.cache
def _schema_of(cls: type, args: tuple, kwargs: tuple) -> dict[str, Any]:
    return super(SchemaOnce, cls).model_json_schema(*args, **dict(kwargs))  # type: ignore[misc]
