"""Where credentials go on disk: the tmpfs credential directory.

The directory is cloud-agnostic: each cloud describes its files as values (`files`),
the `directory` mirrors the store into them atomically (`atomic`), and the `writer`
drives it from store changes. Outputs never call a token service.
"""

from __future__ import annotations

from bridge.outputs.directory import CredentialDirectory, OutputFailure, recover_svids
from bridge.outputs.files import SharedFile, TargetFile
from bridge.outputs.writer import OutputWriter

__all__ = ["CredentialDirectory", "OutputFailure", "OutputWriter", "SharedFile", "TargetFile",
           "recover_svids"]
