from lth.arms.base import REWOUND, Arm


class Ticket(Arm):
    """The winning ticket (Frankle & Carbin 2019, §2; Frankle et al. 2020, §3): the level's magnitude masks on
    the weights rewound to the rewind point, trained from the rewind step to the end."""

    name = "ticket"
    order = 0
    weights = REWOUND
    is_ticket = True
