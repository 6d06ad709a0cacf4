"""What the techniques need from each built-in runtime, bound in one module per runtime.

A row of the runtime table (``runtimes/table.py``) names its runner (``runtimes/<name>.py``) and
its binding here: the :class:`~edgekit.compress.backend.RuntimeBackend` that says which function of
``compress/`` makes its INT8 and FP16 artifacts, which layers it can keep in float and how its
artifacts are inspected. Bindings sit above both the techniques and the runtimes, so neither
imports the other. A runtime from outside edgekit puts its runner and its binding in one module
(``tests/fake_runtime.py`` does).
"""
