def validate_cohort(root):
    return []
