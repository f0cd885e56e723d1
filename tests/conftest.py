"""Test configuration: CI runs hypothesis derandomized, so a red run can be reproduced."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
