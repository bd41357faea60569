"""RL-Zoo3 experts: training them resumably (`python -m experts.train`), their learning curves, and, in the
folders beside this file (ALGO/ENV_1), the agents the project ships."""
