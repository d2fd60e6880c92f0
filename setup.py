from setuptools import find_packages, setup

setup(
    name="densepose_fnl",
    version="0.1.0",
    description="Fast and light DensePose: Mobile Parsing R-CNN on torch, timm and ONNX Runtime",
    packages=find_packages(include=["densepose_fnl", "densepose_fnl.*"]),
    python_requires=">=3.10",
    include_package_data=True,
)
