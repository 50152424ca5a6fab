"""emodiff-jax: EMOdiffhead (arXiv 2409.07255) in JAX/Flax for TPU and GPU."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax[cpu]>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "ml-collections>=1.1,<2",
    "chex>=0.1.92,<0.2",
    "absl-py>=2.1,<3",
    "numpy>=2.0,<3",
    "scipy>=1.13,<2",
    "librosa>=0.11,<0.12",
    "tensorflow-datasets>=4.9.10,<4.10",
    "transformers>=5.23,<6",
    "safetensors>=0.6,<1",
    "einops>=0.8,<0.9",
    "tqdm>=4.66,<5",
    # 5.x dropped the Haar face detector (cv2.data.haarcascades) that the data builders use.
    "opencv-python-headless>=4.10,<5",
    "av>=14,<19",
    "imageio>=2.34,<3",
    "pillow>=10,<14",
    # TensorBoard event files without TensorFlow.
    "tensorboardX>=2.6,<3",
]

TEST_REQUIRES = [
    "pytest>=8,<10",
    # The CPU wheel of torch 2.13.0 lies on local disk; a range would pull a multi-GB CUDA build.
    "torch==2.13.0",
    "diffusers>=0.42,<0.43",
    "scikit-image>=0.24,<0.27",
    # The MFCCs SyncNet was trained on; tests/test_eval_metrics.py checks eval/mfcc.py against it.
    "python_speech_features==0.6",
]

setup(
    name="emodiff-jax",
    version="0.1.0",
    description="Continuously emotional talking-head generation via diffusion (EMOdiffhead) in JAX/Flax.",
    packages=find_packages(include=["emodiff_jax*", "launch*", "configs*", "data*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
