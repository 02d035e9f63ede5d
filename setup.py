"""qwengw: an OpenAI-compatible, security-hardened gateway in front of Ollama, and nginxgen."""

from setuptools import find_packages, setup

setup(
    name="qwengw",
    version="0.1.0",
    description="OpenAI-compatible gateway for Ollama (auth, allowlist, limits, audit) and a hardened Nginx site generator",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["qwengw", "qwengw.*", "nginxgen", "nginxgen.*"]),
    package_data={"qwengw": ["py.typed"], "nginxgen": ["py.typed"]},
    install_requires=[
        "flask>=3.0",
        "gunicorn>=23.0",
        "gevent>=24.10.1",
        "requests>=2.32",
        "limits>=5.0",
        "crossplane>=0.5.8",
        "pyyaml>=6.0",
    ],
    extras_require={
        # redis: exact rate limits shared by all workers and instances (limits' redis storage).
        "redis": ["redis>=5.0"],
        # metrics: Prometheus text format with multiprocess mode for several gunicorn workers.
        "metrics": ["prometheus-client>=0.20"],
        "test": [
            "pytest>=8",
            "openai>=1.40",
            "trustme>=1.1",
            "redis>=5.0",
            "prometheus-client>=0.20",
            "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "qwengw=qwengw.cli:main",
            "nginxgen=nginxgen.cli:main",
        ]
    },
)
