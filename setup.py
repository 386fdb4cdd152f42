"""Map the three code folders onto the gonio.core, gonio.store and gonio.shell packages.

``session_examples`` (the scripts ``gonio demo`` runs) is shipped as the data
package gonio.session_examples, so that a wheel or a regular ``pip install .``
finds it beside gonio.shell, as a source checkout does.
"""

from setuptools import find_packages, setup

packages, package_dir = [], {}
for top in ("core", "store", "shell"):
    for sub in [top] + [f"{top}.{p}" for p in find_packages(top)]:
        packages.append(f"gonio.{sub}")
        package_dir[f"gonio.{sub}"] = sub.replace(".", "/")
packages.append("gonio.session_examples")
package_dir["gonio.session_examples"] = "session_examples"

setup(packages=packages, package_dir=package_dir,
      package_data={"gonio.session_examples": ["*.gonio"]})
