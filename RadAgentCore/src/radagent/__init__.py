"""RadAgent core: photon IMRT planning for AI agents (patient model, dose engine, optimizer, evaluation).

Heavy optional dependencies (torch) are imported only by the modules that need them.
"""

__version__ = "0.1.0"
