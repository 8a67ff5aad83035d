"""Root conftest: the notebook under nbval runs in the short CPU profile, headless, writing into a temporary
folder (the kernel nbval starts inherits this environment)."""
import os
import tempfile

os.environ.setdefault("CS461_PROFILE", "short")
os.environ.setdefault("CS461_STATIC_WIDGETS", "1")
os.environ.setdefault("CS461_OUTPUT_DIR", tempfile.mkdtemp(prefix="cs461_nbval_"))
os.environ.setdefault("CS461_SUBMISSION_DIR", os.path.join(os.environ["CS461_OUTPUT_DIR"], "submission"))
