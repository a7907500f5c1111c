"""score-sde: score-based generative modelling through SDEs, in plain PyTorch."""
from setuptools import find_packages, setup

setup(
    name="score-sde",
    version="0.1.0",
    description="Score-based generative modelling through stochastic differential equations (PyTorch).",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sde_lib", "sde_lib.*", "sde_app", "sde_app.*", "models", "models.*", "configs"]),
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
        # The 8x8 digits ship with it (sde_app.data.digits) and its GaussianMixture is the
        # classical reference of --mode eval (sde_app.references).
        "scikit-learn>=1.0",
    ],
    # The weights of the digits classifier (FID/KID/IS of the digits, sde_app.features).
    package_data={"sde_app": ["weights/*.pt"]},
    # eval: the FID Inception network (torch-fidelity's port of the TF graph). torch-fidelity
    # depends on torchvision, which pins its own torch; only its Inception module is imported
    # here, so with a torch of your own install it alone: pip install --no-deps torch-fidelity
    # (docs/evaluation.md).
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "pytest-xdist>=3"], "eval": ["torch-fidelity>=0.3"]},
)
