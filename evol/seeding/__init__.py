"""LLM-written seeds (SVIT, MM-Instruct), training-mix selection and export."""
