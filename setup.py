"""Build and install edge-lottery.

The native sparse delegate (converters/delegate/src/*.c) is compiled by gcc as part of a normal
``pip install``; see the DELEGATE BUILD section below.
"""

from __future__ import annotations

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # TFMOT 0.8.1 works only with Keras 2, so TensorFlow is paired with tf-keras of the same minor.
    "tensorflow>=2.21,<2.22",
    "tf-keras>=2.21,<2.22",
    "tensorflow-model-optimization>=0.8.1,<0.9",
    "ai-edge-litert>=2.3,<2.4",
    "tflite-micro",
    "numpy>=1.26",
    "click>=8.1",
    "scikit-learn>=1.3",
    "rich>=13",
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.5", "pyserial>=3.5", "adbutils>=2.0"],
    "serial": ["pyserial>=3.5"],
    "android": ["adbutils>=2.0"],
}

# ---- DELEGATE BUILD (owned by the sparse delegate; see converters/delegate) ----
EXT_MODULES: list = []
CMDCLASS: dict = {}
# ---- END DELEGATE BUILD ----

setup(
    name="edge-lottery",
    version="0.1.0",
    description="Lottery ticket search, Deep Compression packing and on-device benchmarks for Keras models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["edge_lottery*", "converters*", "devices*"]),
    package_data={"devices": ["profiles/*.toml"], "converters": ["delegate/src/*.c", "delegate/src/*.h"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    entry_points={"console_scripts": ["edge-lottery=edge_lottery.cli:main"]},
)
