"""RadAgent core: photon IMRT planning for AI agents (patient model, dose engine, optimizer, evaluation).

Heavy optional dependencies (torch) are imported only by the modules that need them.
"""

__version__ = "0.1.0"

# Said wherever a user could take a plan for a clinical one: plan.json, the report, the Slicer module.
RESEARCH_USE_ONLY = (
    "Research software, not for clinical use: plans are made by an uncommissioned pencil-beam engine "
    "and agents trained on synthetic phantoms, and are not deliverable treatment plans."
)
