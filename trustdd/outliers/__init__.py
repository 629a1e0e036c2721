"""The outlier pool that TrustDD distills S_out from: corrupted InD images (:mod:`.corruptions`, POE) or
real outliers (OE), built by :mod:`.sources` into ``data/outliers/pool.pt`` (:mod:`.pool`)."""
