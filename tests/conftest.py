"""Test configuration: hypothesis runs derandomized (the same examples every run, so a red run
can be reproduced and CI cannot turn red by chance); ``HYPOTHESIS_PROFILE=explore`` draws new
examples.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
