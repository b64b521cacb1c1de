"""Training, data synthesis and distillation. Never imported by the runtime."""
