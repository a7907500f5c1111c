"""score-sde: score-based generative modelling through SDEs, in plain PyTorch."""
from setuptools import find_packages, setup

setup(
    name="score-sde",
    version="0.1.0",
    description="Score-based generative modelling through stochastic differential equations (PyTorch).",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sde_lib", "sde_lib.*", "models", "models.*", "configs"]),
    py_modules=["main"],
    install_requires=[
        # A range that the CPU wheel torch==2.13.0 satisfies; install torch yourself first
        # (CUDA or CPU build) so that pip does not pick one for you.
        "torch>=2.1,<3",
        "torchsde>=0.2.5",
        "torchdiffeq>=0.2.5",  # the ODE solvers on the torch device (sde_lib/ode.py)
        "scipy>=1.9",
        "numpy>=1.22",
        "ml-collections>=0.1.1",
        "absl-py>=1.0",
        "tensorboard>=2.10",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        "pillow>=9.0",
    ],
    extras_require={"test": ["pytest>=7"]},
)
