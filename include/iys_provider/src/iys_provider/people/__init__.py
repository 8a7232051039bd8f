"""The brand's people: the user source, leavers (KVKK erasure) and retention."""
