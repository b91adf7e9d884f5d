"""PointVL-3D: reference implementation of GRCA (Geometric Reward Credit Assignment).

Dimension legend (used in every shape comment of the package)::

    B  batch rows (= number of prompts x G completions in an RL step)
    G  group size: completions sampled per prompt (Eq. 9 standardizes inside a group)
    T  completion tokens
    F  geometric fields, in the order of ``schema.GEOMETRIC_FIELDS``
       (bbox2d, bbox3d, kpts2d, kpts3d); field id k+1 <-> GEOMETRIC_FIELDS[k], 0 = background
    N  points in a cloud
    M  keypoints per object (16)
    D  parameter dimension of a score vector (variance analysis, Eqs. 17-26)

Equation numbers refer to ``paper/equations.md`` (our restatement of the paper's lost
equations; choices the prose leaves open are marked [reconstruction]).
"""

__version__ = "0.1.0"
