# In-repo runs load the plugin from the source tree; an installed package registers it
# through its pytest11 entry point instead (loading it twice would be an error).
import importlib.metadata

try:
    importlib.metadata.distribution("coldstart-bench")
except importlib.metadata.PackageNotFoundError:
    pytest_plugins = ["coldstart_bench.plugin"]
