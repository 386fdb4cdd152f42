"""Map the three code folders onto the gonio.core, gonio.store and gonio.shell packages."""

from setuptools import find_packages, setup

packages, package_dir = [], {}
for top in ("core", "store", "shell"):
    for sub in [top] + [f"{top}.{p}" for p in find_packages(top)]:
        packages.append(f"gonio.{sub}")
        package_dir[f"gonio.{sub}"] = sub.replace(".", "/")

setup(packages=packages, package_dir=package_dir, package_data={"gonio.shell": ["*.gonio"]})
