"""qwengw: an OpenAI-compatible, security-hardened gateway in front of Ollama, and nginxgen."""

from setuptools import find_packages, setup

setup(
    name="qwengw",
    version="0.1.0",
    description=(
        "OpenAI-compatible gateway for Ollama (auth, allowlist, limits, audit) "
        "and a hardened Nginx site generator"
    ),
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
        # The hop to Ollama: llhttp (Node's HTTP parser) for the answers, made for gevent: ~87 µs
        # of CPU per exchange where urllib3 took ~235 (qwengw/http1.py, docs/benchmarks.md).
        "geventhttpclient>=2.3",
        # /metrics under several workers needs prometheus-client's multiprocess mode.
        "prometheus-client>=0.20",
        # redis:// rate-limit storage (exact limits across workers and instances).
        "redis>=5.0",
    ],
    extras_require={
        # Kept so that `pip install 'qwengw[redis,metrics]'` from older docs still works.
        "redis": [],
        "metrics": [],
        "test": [
            "pytest>=8",
            # property-based tests of every endpoint and of the config loader (tests/test_fuzz.py)
            "hypothesis>=6.100",
            "openai>=1.40",
            "trustme>=1.1",
            "redis>=5.0",
            "prometheus-client>=0.20",
            # Pinned: ruff's formatter changes between releases, and the style check must be
            # green on a fresh install (docs/development.md).
            "ruff==0.17.6",
            # The clients users really run, driven by tests/test_clients.py (marker `clients`)
            # and the dialect tests; together they add ~36 s to a fresh install (measured).
            "anthropic>=0.40",
            "langchain>=1.0",
            "langchain-openai>=1.0",
            "litellm>=1.50",
            "instructor>=1.5",
            # property-based tests of the translators and every endpoint (seeded, bounded)
            "hypothesis>=6.100",
            # the HTML report test: html5lib's strict parser reports every HTML parse error,
            # Pillow reads the headless-Chromium screenshot (size, not blank)
            "html5lib>=1.1",
            "pillow>=10",
        ],
    },
    entry_points={
        "console_scripts": [
            "qwengw=qwengw.cli:main",
            "nginxgen=nginxgen.cli:main",
        ]
    },
)
