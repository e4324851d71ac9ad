"""One definition per concept: menu actions and what each makes, and the identifier patterns shared by the
ACD, the users table and the ticket service."""

from __future__ import annotations


import pytest

from callcentre import config
from callcentre.domain import patterns, reports
from callcentre.domain.menu import BRANCHES, PASS_THROUGH, TICKET_ACTIONS, MenuAction, menu_action
from callcentre.domain.model import Priority, TicketKind


def test_the_configuration_names_exactly_the_menu_actions_the_ivr_knows() -> None:
    assert config.MenuAction is MenuAction  # one list: the configuration validates against the domain's enum
    assert set(BRANCHES) == set(MenuAction)
    with pytest.raises(config.ConfigError, match="ivr.menu.1"):
        config.load_config(None, environ={"CALLCENTRE_IVR__MENU": '{"1": "fax"}'})
    # every configured default maps to an action
    assert {menu_action(a) for a in config.IVRConfig().menu.values()} <= set(MenuAction)
    with pytest.raises(ValueError, match="unknown menu action 'fax'"):
        menu_action("fax")


def test_what_each_menu_action_makes() -> None:
    assert {a: a.ticket_kind for a in TICKET_ACTIONS} == {
        MenuAction.REPAIR: TicketKind.REPAIR, MenuAction.COMPLAINT: TicketKind.COMPLAINT,
        MenuAction.EMERGENCY: TicketKind.EMERGENCY,
    }
    assert MenuAction.EMERGENCY.branch.emergency and MenuAction.EMERGENCY.branch.priority is Priority.MAJOR
    assert (MenuAction.REPAIR.skill, MenuAction.COMPLAINT.skill, MenuAction.AGENT.skill) == ("repair", "complaint", None)
    assert PASS_THROUGH == {MenuAction.ENGLISH, MenuAction.REPEAT}
    assert all(a.branch.back_to_menu for a in (MenuAction.SELF_SERVICE, *PASS_THROUGH))
    assert MenuAction.SELF_SERVICE.prompt == "menu-self-service"
    # the reconciliation reads the same definition (it works on the configured names)
    assert reports.TICKET_ACTIONS == {"repair", "complaint", "emergency"}
    assert reports.chosen_action("9>*>2>1>rec", {"9": "english", "*": "repeat", "2": "repair"}) == "repair"


@pytest.mark.parametrize("pattern, good, bad", [
    (patterns.TOKEN, ["repair", "zh", "after_hours-2"], ["", "Repair", "a b", "x" * 33, "repair\n"]),
    (patterns.INTERFACE, ["PJSIP/agent1", "Local/8001@callcentre-agents", "SIP/8001"],
     ["PJSIP/a&Local/b", "PJSIP/a,b", "Console/dsp", "PJSIP/", "PJSIP/a b", "PJSIP/a\n"]),
    (patterns.DIALLABLE, ["+8613800138000", "110", "01012345678"], ["12", "+86 138", "138\r\n", "13800138000\n", "${X}", ""]),
    (patterns.CHANNEL_NAME, ["PJSIP/agent1-0000002a", "Local/agent1@callcentre-agents-0000002a;1"],
     ["PJSIP/a,qB", "PJSIP/a|b", "", "PJSIP/a b", "PJSIP/a-1\n"]),
])
def test_patterns(pattern, good, bad) -> None:
    assert all(pattern.match(v) for v in good), good
    assert not any(pattern.match(v) for v in bad), bad


def test_the_users_table_and_the_ticket_service_use_the_same_patterns() -> None:
    from callcentre.domain.acd import model
    from callcentre.service import tickets
    from callcentre.storage import users_repo

    assert users_repo.INTERFACE_RE is patterns.INTERFACE is model.INTERFACE
    assert users_repo._TOKEN_RE is patterns.TOKEN is model.TOKEN
    assert tickets.DIALLABLE is patterns.DIALLABLE
    assert patterns.PLAIN_CALLER_NUMBER.fullmatch("+8613800138000") and not patterns.PLAIN_CALLER_NUMBER.fullmatch("138\r\n")
