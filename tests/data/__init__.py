# A package, so pytest imports tests/data/conftest.py as `data.conftest`: as a bare `conftest` it
# would replace tests/conftest.py in sys.modules and break `from conftest import ...` elsewhere.
